"""The autoscaling simulator: replay real traces through simulated continuous-batching replicas.

traces.py loads the shared traces (Azure CSV, Mooncake JSONL) or generates bursty synthetic load;
replica.py is one replica's engine physics (step time from a CapacityProfile); fleet.py is pods, roles,
cold starts and routing; metrics.py turns what happened into the Observation a MetricsSource would report;
autoscalers.py holds the sloserve policy adapter and the baselines; run.py is the event loop;
tuning.py the grid searches; report.py the table and plots; cli.py `sloserve simulate`.
"""
