"""Thin AWS Lambda entry points over the schemahub core."""
