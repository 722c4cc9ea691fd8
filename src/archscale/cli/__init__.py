"""The `archscale` command line (cli.main); each stage's sub-commands live in their own module
and keep heavy imports inside the commands, so `archscale --help` starts quickly."""
