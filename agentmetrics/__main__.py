from agentmetrics.cli import cli

cli(prog_name="agentmetrics")
