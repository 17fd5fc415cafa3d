"""GPU check of the packaged workloads on ONE NVIDIA GPU (about 10 minutes):
- a bf16 DeepSpeed ZeRO-2 pre-train of a ~300M-parameter llama on the whole GPU (tokens/s and MFU);
- a small pre-train on a 0.5-GPU slice that gets SIGTERM mid-run (exit 143, checkpoint) and resumes;
- a LoRA and a QLoRA fine-tune of the 300M model, each on a 0.5-GPU slice.
NVML's peak per-process memory of each slice case must stay inside the slice (and torch's too).

Each case runs the real entry point (``python -m workloads.pretrain`` / ``workloads.finetune``) as
its own process with the slice env the agent sets (GPUPOOL_MEMORY_FRACTION, GPUPOOL_MEMORY_MIB,
rendezvous). Needs torch (CUDA), transformers and peft (bitsandbytes for QLoRA); DeepSpeed and
pydantic come from bundled wheels when missing. Prints one JSON summary line on stdout (``--out``
also writes it, e.g. to docs/). Without a GPU: "no NVIDIA GPU", exit 0 (2 with --require-gpu).
``--cpu-rehearsal`` runs the same cases tiny on CPU (QLoRA then only checks its clear refusal).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEEL_DIRS = [ROOT / "scripts" / "gpu-check-workloads-wheels", ROOT / "scripts" / "gpu-check-wheels"]
NEEDED = {"pydantic": "pydantic", "deepspeed": "deepspeed", "hjson": "hjson", "cpuinfo": "py_cpuinfo",
          "einops": "einops", "msgpack": "msgpack", "annotated_types": "annotated_types",
          "typing_inspection": "typing_inspection"}


def log(msg: str) -> None:
    print(f"[gpu-check-workloads] {msg}", file=sys.stderr, flush=True)


def ensure_packages(target: Path) -> dict[str, str]:
    """Unpack the bundled wheel of every needed module that does not import; returns module -> source."""
    import importlib.util

    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found: dict[str, str] = {}
    for module, dist in NEEDED.items():
        if importlib.util.find_spec(module) is not None:
            found[module] = "installed"
            continue
        wheels = [w for d in WHEEL_DIRS for w in d.glob(f"{dist}-*.whl")
                  if "-py3-none-" in w.name or f"-{tag}-{tag}-" in w.name]
        if module == "pydantic":  # pydantic needs its compiled core of the same Python
            wheels += [w for d in WHEEL_DIRS for w in d.glob(f"pydantic_core-*-{tag}-{tag}-*.whl")]
        if not wheels or (module in ("pydantic", "msgpack") and platform.machine() != "x86_64"):
            raise SystemExit(f"error: {module} is not installed and no bundled wheel fits {tag} on "
                             f"{platform.machine()}; pip install {dist}")
        target.mkdir(parents=True, exist_ok=True)
        for w in wheels:
            with zipfile.ZipFile(w) as zf:
                zf.extractall(target)
        found[module] = f"bundled {wheels[0].name}"
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NvmlPeak(threading.Thread):
    """Peak GPU memory NVML reports for a process tree (includes the CUDA context)."""

    def __init__(self, root_pid: int) -> None:
        super().__init__(daemon=True)
        self.root_pid, self.peak_mib, self.stop, self.available = root_pid, 0.0, False, False

    def run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            self.available = True
        except Exception:  # noqa: BLE001 - NVML is optional for this check
            return
        while not self.stop:
            try:
                used = sum((p.usedGpuMemory or 0) for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
                           if _in_tree(p.pid, self.root_pid))
                self.peak_mib = max(self.peak_mib, used / 2**20)
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.1)


def _in_tree(pid: int, root: int) -> bool:
    for _ in range(16):
        if pid == root:
            return True
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid <= 1:
            return False
    return False


PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}  # bf16 dense


def mfu(tokens_per_s: float, params: int, layers: int, hidden: int, seq: int, gpu_name: str) -> float | None:
    """Model FLOPs utilisation: (6N + 12·L·h·s) FLOPs per token (PaLM, App. B) over the GPU's bf16 peak."""
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in gpu_name), None)
    if not peak:
        return None
    return round(tokens_per_s * (6 * params + 12 * layers * hidden * seq) / (peak * 1e12), 4)


def case_env(env: dict[str, str], fraction: float, total_mib: int) -> dict[str, str]:
    out = {**env, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0",
           "WORLD_SIZE": "1", "LOCAL_RANK": "0", "PYTHONUNBUFFERED": "1"}
    if fraction < 1:
        out.update(GPUPOOL_MEMORY_FRACTION=f"{fraction:.4f}", GPUPOOL_MEMORY_MIB=str(int(total_mib * fraction)),
                   GPUPOOL_DEVICE_MEMORY_MIB=str(total_mib))
    return out


def run_case(name: str, module: str, spec: dict, fraction: float, total_mib: int, env: dict[str, str],
             timeout: float, stop_at_step: int | None = None) -> dict:
    """One entry-point process on a slice; with ``stop_at_step`` it gets SIGTERM at that step."""
    import signal

    from workloads.progress import parse

    slice_mib = int(total_mib * fraction)
    log(f"{name}: {module} on {fraction:g} GPU ({slice_mib} MiB)")
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", module, "--spec-json", json.dumps(spec)], cwd=ROOT,
                            env=case_env(env, fraction, total_mib), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    nvml = NvmlPeak(proc.pid)
    nvml.start()
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        p = parse(line)
        if stop_at_step and p and p.get("step", 0) >= stop_at_step and "loss" in p:
            proc.send_signal(signal.SIGTERM)
            stop_at_step = None
        if time.monotonic() - t0 > timeout:
            proc.kill()
            lines.append(f"\n(timed out after {timeout:g} s)")
            break
    proc.wait()
    nvml.stop = True
    out = "".join(lines)
    progress = [p for p in map(parse, out.splitlines()) if p]
    done = [p for p in progress if p.get("done")]
    result: dict = {"case": name, "fraction": fraction, "slice_mib": slice_mib, "exit_code": proc.returncode,
                    "wall_s": round(time.monotonic() - t0, 1),
                    "peak_nvml_mib": round(nvml.peak_mib, 1) if nvml.available else None}
    preempted = [p for p in progress if p.get("event") == "preempted"]
    resumed = [p for p in progress if p.get("event") == "resumed"]
    if preempted:
        result["stopped_at_step"] = preempted[0]["step"]
    if resumed:
        result["resumed_at_step"] = resumed[0]["step"]
    nvml_inside = result["peak_nvml_mib"] is None or fraction >= 1 or result["peak_nvml_mib"] <= slice_mib
    if preempted and proc.returncode == 143:
        result["ok"] = nvml_inside
        return result
    if proc.returncode != 0 or not done:
        result.update(ok=False, error_tail=out[-1500:])
        log(f"{name}: FAILED (exit {proc.returncode})\n{out[-1500:]}")
        return result
    d = done[-1]
    peak = d.get("peak_gpu_mib")
    result.update(tokens_per_s=round(d["tokens_per_s"], 1), val_loss_start=round(d["first_val_loss"], 3),
                  val_loss_end=round(d["val_loss"], 3), peak_torch_mib=peak)
    result["inside_slice"] = (peak is None or peak <= slice_mib) and nvml_inside
    result["ok"] = result["inside_slice"] and d["val_loss"] < d["first_val_loss"]
    log(f"{name}: {result['tokens_per_s']} tokens/s, peak {peak} MiB (torch) / "
        f"{result['peak_nvml_mib']} MiB (NVML) of {slice_mib} MiB, loss {result['val_loss_start']} -> "
        f"{result['val_loss_end']}")
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", required=True)
    ap.add_argument("--require-gpu", action="store_true")
    ap.add_argument("--cpu-rehearsal", action="store_true", help="run tiny cases on CPU (tests this script)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default=None, help="also write the summary JSON here")
    a = ap.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    try:
        import torch
    except ImportError:
        print(json.dumps({"check": "gpu-check-workloads", "ok": False, "error": "torch is not installed"}))
        return 2
    if not torch.cuda.is_available() and not a.cpu_rehearsal:
        log("no NVIDIA GPU: torch.cuda.is_available() is False; nothing to check")
        print(json.dumps({"check": "gpu-check-workloads", "gpu": None, "skipped": "no NVIDIA GPU"}))
        return 2 if a.require_gpu else 0
    sources = ensure_packages(work / "site")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(work / "site"), str(ROOT),
                                                                      os.environ.get("PYTHONPATH")]))}
    sys.path[:0] = [str(work / "site"), str(ROOT)]
    if a.cpu_rehearsal:
        gpu_name, total_mib = "cpu (rehearsal)", 16384
        big = {"hidden_size": 64, "num_layers": 2, "num_heads": 1, "max_seq_len": 128}
        small, train = big, {"steps": a.steps or 6, "micro_batch_size": 4, "seq_len": 64}
        env["CUDA_VISIBLE_DEVICES"] = ""
    else:
        props = torch.cuda.get_device_properties(0)
        gpu_name, total_mib = props.name, props.total_memory // 2**20
        # ~300M parameters: 24 x (4h² + 3h·2816) + embeddings
        big = {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "intermediate_size": 2816, "max_seq_len": 1024}
        small = {"hidden_size": 512, "num_layers": 8, "num_heads": 8, "max_seq_len": 512}
        train = {"steps": a.steps or 40, "micro_batch_size": 16, "seq_len": 512}
    log(f"device {gpu_name}, {total_mib} MiB; packages {sources}")
    corpus = str(ROOT / "examples" / "corpus")
    common = {"checkpoint_every": 10_000, "eval_batches": 4, "log_every": 10, "precision": "auto"}
    res = {"resources": {"gpu": 1}}
    results = []
    pre = work / "pretrain-300m"
    spec = {"kind": "pretrain", "name": "gpu-check-pretrain", "data": f"{corpus}/stories.txt", "output": str(pre),
            "model": big, "dataset": {"vocab_size": 2000}, **res,
            "training": {**train, **common, "lr": 6e-4, "warmup_steps": 5, "zero_stage": 2, "precision": "bf16"}}
    r = run_case("pretrain-300m-bf16", "workloads.pretrain", spec, 1.0, total_mib, env, 420)
    if r.get("tokens_per_s"):
        from workloads.estimate import count_params
        from workloads.spec_parts import ModelSpec

        params = count_params(ModelSpec(**big, vocab_size=2000))
        r.update(params=params, mfu=mfu(r["tokens_per_s"], params, big["num_layers"], big["hidden_size"],
                                        train["seq_len"], gpu_name))
    results.append(r)
    resume = work / "pretrain-resume"
    spec = {"kind": "pretrain", "name": "gpu-check-resume", "data": f"{corpus}/stories.txt", "output": str(resume),
            "model": small, "dataset": {"vocab_size": 2000}, **res,
            "training": {**train, **common, "steps": 30, "log_every": 1, "lr": 1e-3, "zero_stage": 2}}
    first = run_case("resume-sigterm", "workloads.pretrain", spec, 0.5, total_mib, env, 240, stop_at_step=8)
    second = run_case("resume-continue", "workloads.pretrain", spec, 0.5, total_mib, env, 240)
    second["ok"] = bool(second.get("ok") and first.get("stopped_at_step")
                        and second.get("resumed_at_step") == first["stopped_at_step"])
    results += [first, second]
    base = pre / "model"
    for method in ("lora", "qlora"):
        if not (base / "config.json").is_file():
            results.append({"case": method, "ok": False, "error_tail": "no pre-trained base model"})
            continue
        spec = {"kind": "finetune", "name": f"gpu-check-{method}", "data": f"{corpus}/qa_pairs.jsonl",
                "output": str(work / method), "base_model": str(base), "method": method, **res,
                "dataset": {"style": "prompt_response"},
                "training": {**train, **common, "lr": 2e-3, "zero_stage": 0, "seq_len": 128}}
        r = run_case(f"{method}-0.5", "workloads.finetune", spec, 0.5, total_mib, env, 300)
        if method == "qlora" and a.cpu_rehearsal:  # QLoRA needs a GPU: the rehearsal checks the clear refusal
            r = {"case": "qlora-0.5", "ok": r.get("exit_code") == 2 and "needs an NVIDIA GPU" in r.get("error_tail", ""),
                 "skipped": "needs an NVIDIA GPU"}
        results.append(r)
    summary = {"check": "gpu-check-workloads", "gpu": gpu_name, "gpu_memory_mib": total_mib,
               "torch": torch.__version__, "packages": sources, "cases": results,
               "ok": all(r.get("ok") for r in results)}
    line = json.dumps(summary)
    print(line, flush=True)
    if a.out:
        Path(a.out).write_text(line + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
