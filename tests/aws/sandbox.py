"""Run a synthesized Lambda function as AWS would: its code asset and layers from cdk.out, CPython 3.12, exactly
the Environment the template gives it, and only the permissions of its own role (tests/aws/lambda_runtime.py).

One sandbox is one warm Lambda execution environment: module state (clients, compiled mappings) survives
between invocations, as it does in AWS.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import select
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.aws.template import Deployment, emf_metrics

HERE = Path(__file__).resolve().parent


@functools.cache
def lambda_python() -> str:
    """CPython 3.12, the functions' runtime (the layers hold cp312 wheels)."""
    for cand in [os.environ.get("SCHEMAHUB_LAMBDA_PYTHON"), shutil.which("python3.12"),
                 *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python3.12")))]:
        if cand and os.access(cand, os.X_OK) and subprocess.run(
                [cand, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"], capture_output=True).returncode == 0:
            return cand
    raise RuntimeError("the AWS rules layer runs the functions on CPython 3.12 (their Lambda runtime): install "
                       "python3.12, or set SCHEMAHUB_LAMBDA_PYTHON to its path")


@dataclass
class Invocation:
    result: object = None
    error: dict | None = None
    stdout: list[str] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)
    modules: dict = field(default_factory=dict)
    init_s: float = 0.0

    @property
    def metrics(self):
        return emf_metrics(self.stdout)

    def denied(self) -> list[dict]:
        return [c for c in self.calls if not c["allowed"]]


class LambdaSandbox:
    def __init__(self, dep: Deployment, logical: str, *, extra_env: dict[str, str], workdir: Path) -> None:
        self.dep, self.logical = dep, logical
        props = dep.function(logical)
        self.timeout_s = int(props.get("Timeout", 3))
        self.name = dep.names[logical]
        task_root = dep.asset_dir(logical)
        layers = [str(d / "python") for d in dep.layer_dirs(logical)]
        role = dep.role_of(logical)
        config = {
            "task_root": str(task_root), "layers": layers, "handler": props["Handler"],
            "iam_module": str(HERE / "iam.py"), "statements": dep.role_statements(role),
            "bucket_policy": dep.bucket_policy(), "role_arn": dep.att(role, "Arn"),
            "function_arn": dep.function_arn(logical),
        }
        cfg = workdir / f"sandbox-{logical}-{uuid.uuid4().hex[:6]}.json"
        cfg.write_text(json.dumps(config))
        self.template_env = dep.environment(logical)
        env = {k: v.replace("/var/task", str(task_root)) for k, v in self.template_env.items()}
        env.update({
            # What the Lambda service adds to every function's environment.
            "AWS_REGION": dep.region, "AWS_DEFAULT_REGION": dep.region, "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(props.get("MemorySize", 128)), "LAMBDA_TASK_ROOT": str(task_root),
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12", "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.name}",
            "TZ": ":UTC", "LANG": "en_US.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin",
            "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
            "SANDBOX_CONFIG": str(cfg),
        })
        env.update(extra_env)  # the test's network: moto's endpoint and the exchange simulators
        self.env = env
        self.proc = subprocess.Popen([lambda_python(), "-I", "-S", str(HERE / "lambda_runtime.py")], cwd=task_root,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.invocations: list[Invocation] = []

    def invoke(self, event, *, remaining_ms: int | None = None) -> Invocation:
        """Invoke once; remaining_ms defaults to the function's configured timeout."""
        req = {"event": event, "request_id": str(uuid.uuid4()),
               "remaining_ms": self.timeout_s * 1000 if remaining_ms is None else remaining_ms}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout_s + 30)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            raise RuntimeError(f"{self.logical} sandbox died or hung: {self.proc.stderr.read()[-3000:]}")
        inv = Invocation(**json.loads(line))
        self.invocations.append(inv)
        return inv

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
