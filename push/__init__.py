"""Push campaigns: campaign files, audiences, guardrails, the delivery ledger and senders.

Plain Python with no Dagster import; Dagster only schedules what lives here.
"""
