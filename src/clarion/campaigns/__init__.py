"""Campaigns: audiences sent a template once, at a time or on a schedule, after approval."""
