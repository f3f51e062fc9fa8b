"""``serve``: what only ``outpaint serve`` reads (keys, limits, result URLs, replicas).
Everything else a server does (the model, sizing, encoding, colour, labels, where
results are written) comes from the same sections as ``outpaint run``."""

from __future__ import annotations

from pydantic import Field, model_validator

from .base import Section as _Section

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class ServeConfig(_Section):
    """``outpaint serve``: the hosted API's contract on Ray Serve (docs/serving.md)."""

    @model_validator(mode="after")
    def _replicas(self):
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                "min_replicas must not exceed max_replicas (the autoscaling range is min..max)"
            )
        if self.host not in LOOPBACK and self.public_url is None and not self.allowed_hosts:
            raise ValueError(
                f"host {self.host} listens beyond loopback: set public_url (the address clients "
                "reach) or allowed_hosts (the Host values accepted), so no request's Host header "
                "ends up in the URLs handed out"
            )
        return self

    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0: every interface)")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port")
    keys_env: str = Field(
        "OUTPAINT_SERVE_KEYS",
        description="environment variable holding the accepted x-key values, comma-separated "
        "(never put keys in this file)",
    )
    keys_file: str | None = Field(
        None, description="a file (any fsspec URI) with one accepted key a line, instead"
    )
    signing_key_env: str = Field(
        "OUTPAINT_SERVE_SIGNING_KEY",
        description="environment variable with the secret that signs result URLs; unset: a "
        "random one per start (URLs handed out before a restart stop working; results stay)",
    )
    public_url: str | None = Field(
        None,
        description="the server's address as clients reach it (a load balancer, an ingress), "
        "for polling_url and result.sample; default: the address the request came to",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host header values (name or name:port) whose address goes into polling and "
        "result URLs when public_url is unset; loopback names always; others: 400",
    )
    drain_s: float = Field(
        30.0,
        ge=0,
        description="on SIGTERM (a rolling update, a node drain) or shutdown: how long the server "
        "finishes the tasks it accepted before it stops (503 to new ones meanwhile); "
        "Kubernetes' default grace period is 30 s",
    )
    read_timeout_s: float = Field(
        30.0, gt=0, description="a request body that sends nothing for this long: 408"
    )
    max_active_per_key: int = Field(
        24,
        ge=1,
        description="tasks a key may have pending at once (the hosted API's 24); 429 past it",
    )
    result_ttl_s: float = Field(
        600.0, gt=0, description="a result URL expires this long after its task finished"
    )
    max_body_bytes: int | None = Field(
        None,
        ge=1024,
        description="largest request body; default: base64 of limits.max_source_bytes + 64 KiB; "
        "413 past it",
    )
    task_timeout_s: float = Field(
        900.0, gt=0, description="a task not finished by then ends Error (not charged)"
    )
    max_batch_size: int | None = Field(
        None,
        ge=1,
        description="requests one model call may take (@serve.batch); default runtime.batch_size; "
        "1 turns batching off",
    )
    batch_wait_s: float = Field(
        0.05, ge=0, le=10, description="how long a batch waits for more requests before it runs"
    )
    min_replicas: int = Field(1, ge=0, description="model replicas, autoscaling range: min..max")
    max_replicas: int = Field(1, ge=1, description="model replicas: the most")
    target_ongoing_requests: float = Field(
        8.0, gt=0, description="autoscaling: requests a model replica should have in flight"
    )
    gpus_per_replica: float | None = Field(
        None,
        ge=0,
        description="default: runtime.num_gpus_per_actor's default (1 for flux-fill with GPUs, "
        "0 for the CPU backends)",
    )
    cpus_per_replica: float | None = Field(
        None,
        gt=0,
        description="CPUs reserved by each model replica; default: runtime.num_cpus_per_actor "
        "(1), or what the backend declares (0.25 for bfl-api, which waits on the network)",
    )
    credits: float = Field(
        1_000_000.0,
        ge=0,
        description="what GET /v1/credits reports: nothing is charged on your own hardware "
        "(each task's cost is 0), so a client that checks its balance first proceeds",
    )
