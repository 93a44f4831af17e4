"""tokenmill.cluster: getting work onto machines (Ray Jobs submission, KubeRay manifests).

Today a run reaches an existing Ray cluster with ``tokenmill run CONFIG --address auto`` (or
``ray://HOST:10001``); job submission and KubeRay rendering will live here.
"""
