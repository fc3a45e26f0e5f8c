"""After pretraining: what a user does with an encoder.

Frozen evaluation (`evaluate`), features of any images (`embed`), few-label
fine-tuning (`finetune`: the protocol; `classifier`, `label_budgets`, `few_label_arms`,
`few_label_report`: its parts), data inspection (`inspect`, `inspect_report`), SavedModel
export (`export`), pictures of what the encoder
learned (`visualize`), several methods under one budget (`compare`), throughput
measurements (`benchmark`), and the shared tables and plots (`report`).
"""
