"""use: a trained model put to use.

`trained` (a final run's or a trial's model loaded from disk), `evaluate` (the test set, by windows),
`final_report` (a final run's figures and final_report.md),
`card` (the model card beside an export), `output` (the rows `gridtune.predict` writes).
Below: config, sweepdir, data, train.
"""
