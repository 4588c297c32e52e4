"""Model engines (TorchTensor, TensorrtTensor) and what they share."""
