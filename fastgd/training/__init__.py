"""The Python side of training: options, the problem (data and model spec), the epoch
loop with its observers, and the result. The compiled work is in :mod:`fastgd.backends`."""
