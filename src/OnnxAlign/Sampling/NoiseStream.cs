namespace OnnxAlign.Sampling;

/// <summary>
/// The Gaussian noise of one sample (DESIGN §6): sample i of a run draws from the stream seeded (seed, i), so its
/// x_T and every step's noise are the same whatever the batch size, the shard or the machine. xoshiro256** seeded by
/// SplitMix64, Box–Muller for the normals: small, fast and fully specified, so streams are reproducible anywhere.
/// </summary>
public sealed class NoiseStream
{
    private ulong _s0, _s1, _s2, _s3;
    private double _spare;
    private bool _hasSpare;

    /// <summary>The stream of sample <paramref name="sampleIndex"/> of a run seeded <paramref name="seed"/>.</summary>
    public NoiseStream(long seed, long sampleIndex)
    {
        ulong state = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL ^ (ulong)sampleIndex * 0xD1B54A32D192ED03UL);
        _s0 = SplitMix64(ref state);
        _s1 = SplitMix64(ref state);
        _s2 = SplitMix64(ref state);
        _s3 = SplitMix64(ref state);
    }

    private NoiseStream(ulong s0, ulong s1, ulong s2, ulong s3) => (_s0, _s1, _s2, _s3) = (s0, s1, s2, s3);

    /// <summary>
    /// A new stream for a copy of this sample (a resampled particle, DESIGN §8), keyed by <paramref name="key"/>: its
    /// seed mixes this stream's current state with the key, so copies with different keys draw different noise, and
    /// the same history gives the same streams. This stream is not advanced.
    /// </summary>
    public NoiseStream Split(long key)
    {
        ulong state = _s0 ^ RotateLeft(_s1, 17) ^ RotateLeft(_s2, 31) ^ RotateLeft(_s3, 47) ^ unchecked((ulong)key * 0xD6E8FEB86659FD93UL);
        return new NoiseStream(SplitMix64(ref state), SplitMix64(ref state), SplitMix64(ref state), SplitMix64(ref state));
    }

    /// <summary>Fills <paramref name="destination"/> with independent N(0, 1) values.</summary>
    public void NextGaussian(Span<float> destination)
    {
        for (int i = 0; i < destination.Length; i++) destination[i] = (float)NextGaussian();
    }

    /// <summary>One N(0, 1) value.</summary>
    public double NextGaussian()
    {
        if (_hasSpare)
        {
            _hasSpare = false;
            return _spare;
        }
        // Box–Muller on (0, 1] × [0, 1): u1 never 0, so the logarithm is finite.
        double u1 = 1.0 - NextDouble();
        double u2 = NextDouble();
        double r = Math.Sqrt(-2.0 * Math.Log(u1));
        double angle = 2.0 * Math.PI * u2;
        _spare = r * Math.Sin(angle);
        _hasSpare = true;
        return r * Math.Cos(angle);
    }

    /// <summary>A uniform value in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    private ulong NextUInt64()
    {
        ulong result = RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = RotateLeft(_s3, 45);
        return result;
    }

    private static ulong RotateLeft(ulong x, int k) => (x << k) | (x >> (64 - k));

    private static ulong SplitMix64(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
