"""Whether this Redis holds every decision: the warm marker and the rebuild that sets it.

A Redis restarted without persistence comes back empty, and a miss then no longer means "no decision".
`ccl:warm` is set when a full rebuild from PostgreSQL completed on this Redis (ledger/services/cache_rebuild.py
`rebuild_cache`); lookups that once saw it and now miss it answer from PostgreSQL until it is back.
`ccl:rebuild:<id>` marks a rebuild in progress; a restart wipes it, so a rebuild interrupted by one never
claims warm. `ccl:rebuild-lock` keeps two beat sweeps from rebuilding at once.
"""

from __future__ import annotations

import uuid

from ledger.storage.redis_guard import GuardedRedis

WARM_KEY = "ccl:warm"
REBUILD_KEY = "ccl:rebuild:"
REBUILD_LOCK_KEY = "ccl:rebuild-lock"

# The rebuild's marker is wiped by a Redis restart, so a rebuild interrupted by one never claims warm.
_MARK_WARM = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('SET', KEYS[2], '1')
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


class RebuildMarkers:
    def __init__(self, redis: GuardedRedis) -> None:
        self.redis = redis
        self._mark_warm = redis.client.register_script(_MARK_WARM)

    def is_warm(self) -> bool:
        with self.redis.errors("warm"):
            return bool(self.redis.client.exists(WARM_KEY))

    def begin_rebuild(self) -> str:
        marker = REBUILD_KEY + uuid.uuid4().hex
        with self.redis.errors("rebuild"):
            self.redis.client.set(marker, 1, ex=3600)
        return marker

    def finish_rebuild(self, marker: str) -> bool:
        """Mark the cache warm, unless Redis restarted (and so lost the marker) during the rebuild."""
        with self.redis.errors("rebuild"):
            return bool(self._mark_warm(keys=[marker, WARM_KEY]))

    def lock_rebuild(self, seconds: int) -> bool:
        with self.redis.errors("rebuild lock"):
            return bool(self.redis.client.set(REBUILD_LOCK_KEY, 1, nx=True, ex=seconds))

    def unlock_rebuild(self) -> None:
        with self.redis.errors("rebuild lock"):
            self.redis.client.delete(REBUILD_LOCK_KEY)
