"""Tests of the decision store, its migrations and program locks."""
