"""Tests of the ops, one file per concern; test_op_table.py holds the shared OpInfo table."""
