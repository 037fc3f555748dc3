"""Run a set of recplane resources on this machine, with no cluster.

The same step functions a pod runs are called here: the data steps in-process,
training under torchrun in a subprocess (several processes, gloo), serving as a
local BentoML server. Resources run in dependency order; a resource whose
upstream is not part of the set resolves it from the store, as in a cluster.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from recplane.api import PIPELINE_ORDER
from recplane.api.resource import Resource
from recplane.store import Manifest, Store


class PipelineError(RuntimeError):
    """A stage failed; the message names the resource and the cause."""


@dataclass
class StageResult:
    resource: Resource
    seconds: float
    manifest: Manifest | None = None
    endpoint: str | None = None

    @property
    def version(self) -> str | None:
        return self.manifest.version if self.manifest else None

    @property
    def status(self) -> dict[str, Any]:
        return self.manifest.status if self.manifest else {}


@dataclass
class Server:
    """A local model server started for a ModelDeployment."""

    process: subprocess.Popen[bytes]
    endpoint: str
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class LocalPipeline:
    store: Store
    nproc: int = 2
    on_stage: Callable[[str], None] = lambda message: None
    servers: list[Server] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="recplane-local-")))

    def run(self, resources: list[Resource], serve: bool = True) -> list[StageResult]:
        order = {k: i for i, k in enumerate(PIPELINE_ORDER)}
        results = []
        for res in sorted(resources, key=lambda r: order[r.kind]):
            if res.kind == "ModelDeployment" and not serve:
                continue
            self.on_stage(f"{res.kind} {res.name}")
            start = time.perf_counter()
            result = self._run_one(res)
            result.seconds = time.perf_counter() - start
            results.append(result)
        return results

    def _run_one(self, res: Resource) -> StageResult:
        if res.kind == "SampleSet":
            from recplane.data.steps import materialize_sampleset

            return StageResult(res, 0.0, materialize_sampleset(res.spec, self.store, res.namespace, res.name))  # type: ignore[arg-type]
        if res.kind == "FeatureSet":
            from recplane.data.steps import materialize_featureset

            return StageResult(res, 0.0, materialize_featureset(res.spec, self.store, res.namespace, res.name))  # type: ignore[arg-type]
        if res.kind == "TrainJob":
            return StageResult(res, 0.0, self._train(res))
        return self._deploy(res)

    def spec_file(self, res: Resource) -> Path:
        path = self.workdir / f"{res.kind.lower()}-{res.name}.yaml"
        path.write_text(yaml.safe_dump(res.to_wire(), sort_keys=False))
        return path

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RECPLANE_STORE"] = self.store.uri
        return env

    def _train(self, res: Resource) -> Manifest:
        from recplane.trainer.errors import TrainError
        from recplane.trainer.launch import run_torchrun

        log = self.workdir / f"train-{res.name}.log"
        try:
            return run_torchrun(self.spec_file(res), self.nproc, {"RECPLANE_STORE": self.store.uri}, log_path=log)
        except TrainError as e:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:]) if log.exists() else ""
            raise PipelineError(f"TrainJob {res.name}: {e}\n{tail}") from None

    def model_uri(self, res: Resource) -> str:
        model = res.spec.model  # type: ignore[attr-defined]
        if model.uri:
            return str(model.uri)
        ref = model.train_job_ref
        m = self.store.resolve(res.namespace, "trainjob", ref.name, ref.version)
        return str(self.store.fetch_version(m))

    def _deploy(self, res: Resource) -> StageResult:
        port = _free_port()
        log = self.workdir / f"serve-{res.name}.log"
        cmd = [sys.executable, "-m", "recplane.cli.main", "serve", "--model", self.model_uri(res), "--port", str(port)]
        env = self._env()
        env["RECPLANE_MAX_CANDIDATES"] = str(res.spec.max_candidates)  # type: ignore[attr-defined]
        proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        server = Server(proc, f"http://127.0.0.1:{port}", log)
        self.servers.append(server)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise PipelineError(f"ModelDeployment {res.name}: the server exited ({proc.returncode}):\n{tail}")
            try:
                if httpx.get(f"{server.endpoint}/readyz", timeout=2).status_code == 200:
                    return StageResult(res, 0.0, endpoint=server.endpoint)
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise PipelineError(f"ModelDeployment {res.name}: the server was not ready within 120 s; see {log}")

    def close(self) -> None:
        for s in self.servers:
            s.stop()
        self.servers.clear()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
