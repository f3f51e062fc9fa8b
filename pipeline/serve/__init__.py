"""``outpaint serve``: the hosted FLUX Outpainting API's contract (submit, poll, signed
result URLs, 403/413/422/429) on Ray Serve, over the same planner, backends and encoders
as ``outpaint run`` (docs/serving.md).

- ``contract``: the request body and its 422s (the planner's codes for geometry);
- ``keys``: the accepted keys, held as digests;
- ``tasks``: task state in the output store, signed result URLs;
- ``app``: the deployments and the application builders;
- ``main``: the server in the foreground, until SIGINT/SIGTERM, then the drain;
- ``supervise``: the command's own process, the server a child of it in a session of its
  own (a signal to the command's process group never reaches Ray mid-drain).

Importing this package needs only the core dependencies; ``app`` needs ``ray[serve]``.
May import: the shared packages (``common``, ``config``: configs), ``io``, ``backends``,
``plan`` (the planner: one geometry) and ``run`` (the stages, model resources). Never
``api`` or ``cli``: they import it.
"""
