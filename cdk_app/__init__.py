"""CDK app for the schemahub AWS suite (infrastructure only; the logic is the core library)."""
