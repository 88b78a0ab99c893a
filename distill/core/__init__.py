"""The core of distillation: objectives, the Distiller, feature matches, connectors, schedules, batches and
the teacher-output cache. Imports losses and capture below it; nothing from Hugging Face."""
