"""What the model is and how it is judged: featurizer sizes, the model kind, operating points
and the quality-gate floors."""

from __future__ import annotations

from spam_assets.defs.resources.slice import SettingsSlice


class ModelPolicy(SettingsSlice):
    """Featurizer sizes, the model kind, operating points and the quality-gate floors
    (DESIGN.md section 4); every field is the setting of the same name."""

    max_text_features: int
    max_meta_features: int
    min_df: int
    validation_fraction: float
    refit_with_validation: bool
    target_ham_fpr: float
    reject_ham_fpr: float
    budget_confidence: float
    ensemble: bool
    ensemble_folds: int
    stack_l2: float
    balance_ham_groups: bool
    char_features: int
    gate_min_f1: float
    gate_max_easy_ham_fpr: float
    gate_max_f1_regression: float
    gate_compare: str
    gate_max_recall_regression: float
    reputation_features: bool
    fit_max_rows: int
    featurize_workers: int
    seed: int

    def training_policy(self):
        """What ``spam_assets.lib.training.train`` follows (asset and benchmark alike)."""
        from spam_assets.lib.training import TrainingPolicy

        return TrainingPolicy(
            refit_with_validation=self.refit_with_validation,
            target_ham_fpr=self.target_ham_fpr,
            reject_ham_fpr=self.reject_ham_fpr,
            budget_confidence=self.budget_confidence,
            ensemble_folds=self.ensemble_folds,
            stack_l2=self.stack_l2,
            balance_ham_groups=self.balance_ham_groups,
            fit_max_rows=self.fit_max_rows,
            seed=self.seed,
            featurize_workers=self.featurize_workers,
        )

    def featurizer_config(self):
        """The featurizer's configuration (asset and quality benchmark build it the same way)."""
        from spam_serving.featurize import FeaturizerConfig

        return FeaturizerConfig(
            max_text_features=self.max_text_features,
            max_meta_features=self.max_meta_features,
            min_df=self.min_df,
            reputation=self.reputation_features,
            stacked=self.ensemble,
            char_features=self.char_features,
        )
