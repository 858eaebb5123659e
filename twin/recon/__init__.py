"""twin.recon"""
