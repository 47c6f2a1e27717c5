"""The static leaderboard site: reads the results database, renders leaderboard/ templates and figures."""

from benchsuite.site.build import BuildReport, build_site, leaderboard_dir, publish_site

__all__ = ["BuildReport", "build_site", "leaderboard_dir", "publish_site"]
