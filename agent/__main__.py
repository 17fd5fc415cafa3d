"""``python -m agent``: run the node agent without the CLI (tests, systemd)."""

from __future__ import annotations

import argparse
import sys

from agent.config import ConfigError, load_config


def parse_args(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m agent", description="gpupool node agent. Every "
                                "option can also come from GPUPOOL_AGENT_<NAME> or a YAML --config.")
    p.add_argument("--server", dest="server_url", help="control plane URL (http://host:8000)")
    p.add_argument("--token", help="bootstrap token (only needed the first time)")
    p.add_argument("--ca-bundle", help="PEM certificates to trust for an https server")
    p.add_argument("--node-name")
    p.add_argument("--address", help="address where this node's job endpoints are reached")
    p.add_argument("--backend", help='"nvml" or "simulate:<nodes>x<gpus>x<model>"')
    p.add_argument("--simulate", metavar="SPEC", help="shorthand for --backend simulate:SPEC")
    p.add_argument("--state-dir")
    p.add_argument("--mps", choices=["managed", "external", "off"])
    p.add_argument("--exporter-port", type=int, help="Prometheus + /healthz port; 0 = off")
    p.add_argument("--heartbeat-interval", dest="heartbeat_interval_s", type=float)
    p.add_argument("--poll-wait", dest="poll_wait_s", type=float)
    p.add_argument("--tick", dest="tick_s", type=float)
    p.add_argument("--memory-grace", dest="memory_grace_s", type=float)
    p.add_argument("--sandbox", choices=["auto", "on", "off"],
                   help="jobs as their own uid in their own cgroup (auto: when root with cgroups)")
    p.add_argument("--jobs-dir", help="job working directories (outside the state dir)")
    p.add_argument("--uid-range", help="uids handed to jobs, e.g. 300000-399999")
    p.add_argument("--identity-scope", choices=["team", "job"], help="one uid per team (default) or job")
    p.add_argument("--log-max-bytes", type=int, help="cap per job log stream (newest output kept)")
    p.add_argument("--stop-jobs-on-exit", action="store_const", const=True, default=None,
                   help="stop running jobs when the agent stops (default: leave them for re-adoption)")
    p.add_argument("--no-fencing", dest="fencing", action="store_const", const=False, default=None,
                   help="keep jobs running however long the control plane is unreachable")
    p.add_argument("--log-level")
    p.add_argument("--config", dest="config_file", help="YAML file of settings")
    ns = vars(p.parse_args(argv))
    simulate = ns.pop("simulate")
    if simulate:
        ns["backend"] = f"simulate:{simulate}"
    return ns


def main(argv: list[str] | None = None) -> int:
    from agent.devices.base import BackendUnavailable

    try:
        config = load_config(parse_args(argv))
        from agent.main import run_agent

        run_agent(config)
    except (ConfigError, BackendUnavailable, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:  # e.g. the exporter port is taken, a dir not writable
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
