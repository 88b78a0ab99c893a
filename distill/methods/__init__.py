"""Distillation methods with trainable parts or state (see :mod:`distill.methods.base`).

Importing this package registers them: ``crd``, ``ft``, ``srrl``, ``vid``.
"""

from distill.core.method import BuildContext, MethodLoss, StepContext
from distill.methods.crd import CRDLoss
from distill.methods.ft import FactorTransferLoss
from distill.methods.srrl import SRRLLoss
from distill.methods.vid import VIDLoss

__all__ = ["BuildContext", "CRDLoss", "FactorTransferLoss", "MethodLoss", "SRRLLoss", "StepContext", "VIDLoss"]
