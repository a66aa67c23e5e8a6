"""Generation as fairseq's SequenceGenerator does it: options, ensembles, beam search."""
