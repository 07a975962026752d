"""Translation side: the ResMLP fairseq model and its data, training, evaluation tooling."""
