using System.Numerics.Tensors;
using OnnxAlign.Core;

namespace OnnxAlign.Rewards;

/// <summary>
/// A linear reward r(x) = ⟨a, x⟩ + b. Its KL-aligned law at temperature λ is the exact tilt θ = a/λ (DESIGN §1); its
/// Wasserstein prox is x + a/λ (DESIGN §3).
/// </summary>
public sealed class LinearReward : Reward
{
    /// <inheritdoc/>
    public override bool IsBlackBox => false;

    private readonly float[] _direction;
    private readonly double[] _directionDouble;

    /// <summary>A reward with direction <paramref name="direction"/> (one sample's shape) and offset <paramref name="offset"/>.</summary>
    public LinearReward(string name, ReadOnlySpan<float> direction, double offset = 0) : base(name, direction.Length)
    {
        _direction = direction.ToArray();
        _directionDouble = Array.ConvertAll(_direction, v => (double)v);
        Offset = offset;
        if (_direction.Any(v => !float.IsFinite(v))) throw new ArgumentException($"reward '{name}': direction has non-finite values");
    }

    /// <summary>a.</summary>
    public ReadOnlySpan<float> Direction => _direction;

    /// <summary>b.</summary>
    public double Offset { get; }

    /// <inheritdoc/>
    public override double Evaluate(ReadOnlySpan<float> x) => TensorPrimitives.Dot(_direction, x) + Offset;

    /// <inheritdoc/>
    public override double Evaluate(ReadOnlySpan<double> x) => Numerics.Dot(_directionDouble, x) + Offset;

    /// <inheritdoc/>
    public override double Gradient(ReadOnlySpan<double> x, Span<double> gradient)
    {
        _directionDouble.CopyTo(gradient);
        return Evaluate(x);
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
