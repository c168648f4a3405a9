"""Fault-injection tests: real `ledger serve`, `ledger worker` and `ledger beat` processes on private
Redis and PostgreSQL instances that the tests stop, kill and restart."""
