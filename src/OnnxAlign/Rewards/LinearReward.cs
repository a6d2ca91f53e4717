using System.Numerics.Tensors;

namespace OnnxAlign.Rewards;

/// <summary>
/// A linear reward r(x) = ⟨a, x⟩ + b. Its KL-aligned law at temperature λ is the exact tilt θ = a/λ (DESIGN §1); its
/// Wasserstein prox is x + a/λ (DESIGN §3).
/// </summary>
public sealed class LinearReward
{
    private readonly float[] _direction;

    /// <summary>A reward with direction <paramref name="direction"/> (one sample's shape) and offset <paramref name="offset"/>.</summary>
    public LinearReward(string name, ReadOnlySpan<float> direction, double offset = 0)
    {
        Name = name;
        _direction = direction.ToArray();
        Offset = offset;
        if (_direction.Any(v => !float.IsFinite(v))) throw new ArgumentException($"reward '{name}': direction has non-finite values");
    }

    /// <summary>The spec it was built from, for reports.</summary>
    public string Name { get; }

    /// <summary>a.</summary>
    public ReadOnlySpan<float> Direction => _direction;

    /// <summary>b.</summary>
    public double Offset { get; }

    /// <summary>r(x) for one sample.</summary>
    public double Evaluate(ReadOnlySpan<float> x) => TensorPrimitives.Dot(_direction, x) + Offset;

    /// <summary>r of each sample of a batch.</summary>
    public double[] EvaluateBatch(ReadOnlySpan<float> samples)
    {
        int size = _direction.Length, n = samples.Length / size;
        var r = new double[n];
        for (int i = 0; i < n; i++) r[i] = Evaluate(samples.Slice(i * size, size));
        return r;
    }

    /// <summary>θ = a/λ, the tilt of the KL-aligned law at temperature λ.</summary>
    public float[] Tilt(double lambda)
    {
        if (!(lambda > 0) || double.IsInfinity(lambda)) throw new ArgumentOutOfRangeException(nameof(lambda), lambda, "λ must be finite and > 0");
        var theta = new float[_direction.Length];
        TensorPrimitives.Multiply(_direction, (float)(1 / lambda), theta);
        return theta;
    }
}
