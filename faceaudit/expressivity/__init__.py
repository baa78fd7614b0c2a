"""expressivity"""
