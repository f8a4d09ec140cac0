"""Pipeline: the config, the plan, code versions and the stage entry points."""
