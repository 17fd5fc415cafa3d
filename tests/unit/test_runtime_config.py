"""Agent configuration: file < env < arguments, and clear errors naming the bad setting."""

import pytest

from agent.config import ConfigError, load_config


def test_precedence_file_env_args(tmp_path):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("server-url: http://10.0.0.1:8000\nmps: external\nheartbeat_interval_s: 5\n"
                   "labels: {rack: r1}\n")
    env = {"GPUPOOL_AGENT_CONFIG_FILE": str(cfg), "GPUPOOL_AGENT_MPS": "off",
           "GPUPOOL_AGENT_EXPORTER_PORT": "0"}
    c = load_config({"heartbeat_interval_s": 2.0, "token": None}, env)
    assert c.server_url == "http://10.0.0.1:8000"
    assert c.mps == "off" and c.exporter_port == 0 and c.heartbeat_interval_s == 2.0
    assert c.labels == {"rack": "r1"} and c.token is None


def test_loopback_server_means_loopback_address():
    assert load_config({}, {}).node_address() == "127.0.0.1"
    assert load_config({"address": "10.1.2.3"}, {}).node_address() == "10.1.2.3"


@pytest.mark.parametrize("overrides,env,needle", [
    ({"server_url": "ftp://x"}, {}, "server_url"),
    ({"mps": "sometimes"}, {}, "mps"),
    ({"exporter_port": 70000}, {}, "exporter_port"),
    ({}, {"GPUPOOL_AGENT_HEARTBEAT_INTERVAL_S": "soon"}, "heartbeat_interval_s"),
    ({}, {"GPUPOOL_AGENT_COLOUR": "blue"}, "GPUPOOL_AGENT_COLOUR"),
    ({"config_file": "/nonexistent/agent.yaml"}, {}, "does not exist"),
])
def test_bad_settings_are_named(overrides, env, needle):
    with pytest.raises(ConfigError) as err:
        load_config(overrides, env)
    assert needle in str(err.value)


def test_bad_yaml(tmp_path):
    cfg = tmp_path / "a.yaml"
    cfg.write_text("mps: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config({"config_file": str(cfg)}, {})
    cfg.write_text("nonsense_key: 1")
    with pytest.raises(ConfigError, match="nonsense_key"):
        load_config({"config_file": str(cfg)}, {})
