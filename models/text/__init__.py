"""Text path: Gemma tokenizer, Gemma-3 hidden states (mlx-lm), feature extractor (V1: LTX-2.0, V2: LTX-2.3) and
embeddings connectors."""

from .connector import ConnectorConfig, ConnectorConfigError, EmbeddingsConnector
from .embeddings import (EmbeddingsProcessor, FeatureExtractorV1, FeatureExtractorV2, TextConfigError, TextContext,
                         load_embeddings_processor)
from .encoder import TextEncoder
from .gemma import GemmaConfig, GemmaConfigError, GemmaEncoder, load_gemma
from .tokenizer import DEFAULT_MAX_LENGTH, GemmaTokenizer, PromptTooLongError, TokenizedPrompts

__all__ = ["ConnectorConfig", "ConnectorConfigError", "EmbeddingsConnector", "EmbeddingsProcessor",
           "FeatureExtractorV1", "FeatureExtractorV2", "TextConfigError", "TextContext", "load_embeddings_processor",
           "TextEncoder", "GemmaConfig", "GemmaConfigError", "GemmaEncoder", "load_gemma", "DEFAULT_MAX_LENGTH", "GemmaTokenizer",
           "PromptTooLongError", "TokenizedPrompts"]
