"""The cached computations several screens share: images and their overlays (``images``,
``overlays``), the concept layer (``concepts``, ``unit_map``), probe versions (``probe_versions``),
an image's model evidence (``evidence``) and the probe-dependent parts of its report
(``report_parts``).

Each function takes an ``AppContext`` and caches in ``ctx.caches``; screens import these modules,
never each other."""
