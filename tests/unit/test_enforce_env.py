"""Slice environment: visibility, the GPUPOOL_* contract, MPS limits and framework caps."""

from agent.enforce.env import MpsSettings, inherited_env, mps_thread_percentage, slice_env
from controlplane.core.wire import Rendezvous, SliceSpec, StartOrder

UUID = "GPU-11111111-2222-3333-4444-555555555555"


def order(**kw):
    base = dict(job_id="j1", attempt_id="a1", epoch=1, name="train", argv=["python", "-c", "pass"],
                slices=[SliceSpec(accelerator_uuid=UUID, compute_milli=250, memory_mib=20480,
                                  device_memory_mib=81559)])
    base.update(kw)
    return StartOrder(**base)


def build(o, mps=MpsSettings(mode="off"), grace=1.0):
    return slice_env(o, node="n1", ports=[4000, 4001], master_port=4002, output_dir="/tmp/out",
                     mps=mps, watchdog_grace_s=grace)


def test_fraction_sets_visibility_contract_and_caps():
    se = build(order())
    env = se.env
    assert env["CUDA_VISIBLE_DEVICES"] == UUID and env["NVIDIA_VISIBLE_DEVICES"] == UUID
    assert env["GPUPOOL_ACCELERATOR_UUIDS"] == UUID
    assert env["GPUPOOL_COMPUTE_MILLI"] == "250" and env["GPUPOOL_MEMORY_MIB"] == "20480"
    assert env["GPUPOOL_DEVICE_MEMORY_MIB"] == "81559"
    # the framework cap leaves the CUDA margin inside the slice: (20480 - 714) / (81559 - 480)
    assert env["GPUPOOL_MEMORY_FRACTION"] == "0.2437"
    assert env["GPUPOOL_VLLM_GPU_MEMORY_UTILIZATION"] == "0.243"
    assert env["GPUPOOL_MEMORY_MARGIN_MIB"] == "714" and env["GPUPOOL_FRAMEWORK_MEMORY_MIB"] == "19758"
    assert env["GPUPOOL_PORT"] == "4000" and env["GPUPOOL_PORT_1"] == "4001"
    assert env["GPUPOOL_PORTS"] == "4000,4001"
    assert (env["MASTER_ADDR"], env["MASTER_PORT"], env["WORLD_SIZE"], env["RANK"]) == ("127.0.0.1", "4002", "1", "0")
    assert env["GPUPOOL_OUTPUT_DIR"] == "/tmp/out" and env["GPUPOOL_NODE"] == "n1"
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in env
    assert se.enforcement["mps"] == "off"
    assert "20480 MiB" in se.enforcement["watchdog"]
    assert "GPUPOOL_MEMORY_FRACTION=0.2437" in se.enforcement["framework"]
    assert "margin 714 MiB" in se.enforcement["framework"]


def test_mps_limits_for_a_fraction():
    mps = MpsSettings(mode="managed", available=True, pipe_dir="/s/pipe", log_dir="/s/log")
    se = build(order(), mps)
    assert se.env["CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"] == "25"
    assert se.env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] == "0=20480M"
    assert se.env["CUDA_MPS_PIPE_DIRECTORY"] == "/s/pipe"
    assert se.enforcement["mps"].startswith("managed: 25% threads")


def test_mps_unavailable_is_reported_not_silent():
    se = build(order(), MpsSettings(mode="managed", available=False, detail="nvidia-cuda-mps-control not found"))
    assert "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE" not in se.env
    assert se.enforcement["mps"] == "unavailable: nvidia-cuda-mps-control not found"


def test_whole_gpus_and_rendezvous():
    slices = [SliceSpec(accelerator_uuid=f"GPU-{i}", compute_milli=1000, memory_mib=81559,
                        device_memory_mib=81559) for i in range(2)]
    rdv = Rendezvous(master_addr="10.0.0.5", master_port=29500, nnodes=4, node_rank=1, nproc_per_node=2)
    se = build(order(slices=slices, rendezvous=rdv, rank=1),
               MpsSettings(mode="managed", available=True))
    assert se.env["CUDA_VISIBLE_DEVICES"] == "GPU-0,GPU-1"
    # two accelerators talk through NCCL: its buffers join the margin (714 + 560)
    assert se.env["GPUPOOL_MEMORY_FRACTION"] == "0.9842" and se.env["GPUPOOL_MEMORY_MARGIN_MIB"] == "1274"
    assert (se.env["MASTER_ADDR"], se.env["MASTER_PORT"], se.env["WORLD_SIZE"], se.env["RANK"],
            se.env["NODE_RANK"]) == ("10.0.0.5", "29500", "4", "1", "1")
    assert (se.env["GPUPOOL_NNODES"], se.env["GPUPOOL_NODE_RANK"], se.env["GPUPOOL_NPROC_PER_NODE"]) == ("4", "1", "2")
    assert se.enforcement["mps"] == "not needed (whole accelerators)"


def test_no_slices_hides_all_gpus():
    se = build(order(slices=[]))
    assert se.env["CUDA_VISIBLE_DEVICES"] == "" and se.env["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_inherited_env_is_an_allow_list():
    agent_env = {"PATH": "/bin", "GPUPOOL_AGENT_TOKEN": "secret", "CUDA_VISIBLE_DEVICES": "0",
                 "CUDA_MPS_PIPE_DIRECTORY": "/x", "HOME": "/h", "AWS_SECRET_ACCESS_KEY": "k",
                 "HF_TOKEN": "t", "LC_ALL": "C", "NCCL_SOCKET_IFNAME": "eth0"}
    assert inherited_env(agent_env) == {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C", "NCCL_SOCKET_IFNAME": "eth0"}
    # a sandboxed job runs as another user: the agent's HOME is not its home
    assert "HOME" not in inherited_env(agent_env, same_user=False)


def test_helpers():
    assert mps_thread_percentage(1) == 1 and mps_thread_percentage(333) == 34
    assert mps_thread_percentage(1000) == 100
