"""Sources generated from examples/*.rnn by `rnnspec build examples/*.rnn`."""
