"""The bodies of the command line's commands, each over the stages: `pipeline` (`gammaface
run`), `sweep` (`gammaface gmm sweep`), `submit` and `export`."""
