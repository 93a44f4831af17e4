"""Text encoders shared by the stages that embed documents (quality_embed, semantic_dedup)."""
