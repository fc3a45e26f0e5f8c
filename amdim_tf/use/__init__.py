"""After pretraining: what a user does with an encoder.

Frozen evaluation (`evaluate`), features of any images (`embed`), few-label
fine-tuning (`finetune`), SavedModel export (`export`), pictures of what the encoder
learned (`visualize`), several methods under one budget (`compare`), throughput
measurements (`benchmark`), and the shared tables and plots (`report`).
"""
