"""Third-party client scripts, written as lab scripts for the bench of ``station.yaml``,
run against a served mock lab by ``tests/mock_hw/test_clients.py``."""
