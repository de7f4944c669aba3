"""One module per task; each holds its head, preprocessing, loss, metrics and prediction."""
