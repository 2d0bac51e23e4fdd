"""The jobs floor: the ``dopa`` command and one module per job.

The only code that reads Hydra configs. Each job composes its config, builds every object with
``hydra.utils.instantiate`` (``_target_`` in the YAML) and hands plain objects to the library
floors below (``control``, ``reward_models``, ``ros``, ``sim``, ``basics``), which never see a
``DictConfig``.
"""
