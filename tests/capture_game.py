"""A small real game for the capture tests, run in its own process: a yellow square on blue that A/D (and W/S) move,
red while the left mouse button is held, and a score that counts frames spent at the right edge."""

from __future__ import annotations

import sys

import pygame

TITLE = "diamond-play capture test game"
SIZE = (160, 120)
BACKGROUND, SPRITE, PRESSED = (20, 40, 120), (250, 220, 30), (230, 30, 30)
SPEED = 2  # pixels per 60 Hz frame


def main(seconds: float) -> None:
    pygame.init()
    screen = pygame.display.set_mode(SIZE)
    pygame.display.set_caption(TITLE)
    font = pygame.font.Font(None, 16)
    clock = pygame.time.Clock()
    x, y, score = SIZE[0] // 2 - 8, SIZE[1] // 2 - 8, 0
    for _ in range(int(seconds * 60)):
        for event in pygame.event.get():
            if event.type == pygame.QUIT:
                return
        keys = pygame.key.get_pressed()
        x += SPEED * (keys[pygame.K_d] - keys[pygame.K_a])
        y += SPEED * (keys[pygame.K_s] - keys[pygame.K_w])
        x, y = min(max(x, 0), SIZE[0] - 16), min(max(y, 12), SIZE[1] - 16)
        score += x == SIZE[0] - 16
        screen.fill(BACKGROUND)
        pygame.draw.rect(screen, PRESSED if pygame.mouse.get_pressed()[0] else SPRITE, (x, y, 16, 16))
        screen.blit(font.render(f"score {score}", True, (255, 255, 255)), (2, 1))
        pygame.display.flip()
        clock.tick(60)


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 60.0)
