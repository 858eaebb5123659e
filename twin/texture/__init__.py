"""twin.texture"""
