"""Model-based quality filtering: training classifiers and the stages that apply them."""
