"""What the entry points (train.py, eval.py, scripts/study.py) do around the one library
call: read `--config.KEY=VALUE` overrides (an unknown key is one line), check the resolved
config (one line, exit status 2), assume default workdirs and name the command that makes a
missing prerequisite.

    launch/overrides.py   --config.KEY=VALUE checked against the config file
    launch/validate.py    the values train.py and eval.py accept
    launch/commands.py    default workdirs, missing prerequisites, one-line failures

Apart from configs/, which holds only experiment files (ml_collections get_config()s and
sweep files), so that a file there is an experiment and nothing else.
"""
