"""Samples and features: everything between behaviour events and model inputs.

- `sources` / `synthetic`: where events come from (files, S3, the built-in generator).
- `strategies`: label rule, dedupe, bot filter, inactive users, split, negative sampling.
- `steps`: `materialize_sampleset` / `materialize_featureset` and the `recplane step` entry points.
- `samples`: reading a stored SampleSet version (`iter_record_batches`, equal shares per rank).
- `fitting` / `features`: fitting a FeatureSet and the `FeatureProcessor` that transforms events
  the same way for training and serving; `tensors.to_torch` makes TorchRec inputs of them.
- `catalogs`: ready-made feature catalogs for the synthetic shapes.

Only `tensors` imports torch; the operator may import the rest.
"""
