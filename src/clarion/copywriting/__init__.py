"""AI copy: drafts written by a language model in Clarion's template language, checked like any template before
anyone sees them, and grounded in the copies that measurably converted (the knowledge base)."""
