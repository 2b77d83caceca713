"""Tests of detkit.evaluation."""
