"""Analytics: funnel rollups, experiments, cost, send time, alerts."""
