"""``--plan``: what a command will need (memory per worker, bytes per node, Ray resources) before it starts.

Pure functions over the command's config, the dataset's manifest (or its nominal size) and, when one is
given, the cluster's capacity; the entry modules print :func:`~raydd.planning.report.format_plan` of the
result and stop. Nothing here imports Ray: :mod:`raydd.cluster` reads a cluster's capacity, and
:mod:`raydd.resources` holds what a request, a capacity and a placement are. :mod:`.distill` and :mod:`.tasks`
(experts, tune) make the plans from :mod:`.sizes` and :mod:`.memory`; :mod:`.report` prints them. It reads every
engine's configuration and components, so it sits above the one-stage engines (prepare, experts, distill,
evaluate), which never import it.
"""
