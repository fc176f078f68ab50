"""Dashboards, saved searches and detection rules for the tools siemhub feeds (`siemhub dashboards`)."""
