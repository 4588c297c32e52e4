"""Model engines (TorchTensor, TensorrtTensor, EngineTensor) and what they share."""
