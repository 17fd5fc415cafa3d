"""Job sandbox: a uid per team or job, a job directory it owns, a cgroup per member, device rules.

``policy.Sandbox`` decides per node what applies (root? which cgroup version?) and prepares each
member; ``kill`` is stdlib-only because the job shim imports it. Keep this file import-free.
"""
