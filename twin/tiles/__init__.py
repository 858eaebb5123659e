"""twin.tiles"""
